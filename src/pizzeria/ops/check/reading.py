"""How the check reads Temporal's payloads: with the keys there are, creating none."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter

from pizzeria.temporal.codec import (
    ENCODING,
    KEY_ID,
    KEY_ID_PATTERN,
    NONCE_BYTES,
    TAG_BYTES,
    CodecKeyError,
    EncryptionCodec,
    existing_keys,
)
from pizzeria.temporal.converter import UNREADABLE_ENCODING

# Stands in for the key the check does not have: no payload can name it (not a key id).
NO_KEY = "no key"


class ReadingCodec(EncryptionCodec):
    """The workers' codec, decrypting only, with the check's own word for what it cannot
    read: `CodecKeyError` (the check cannot judge the run) in two cases.

    * A key id the check lacks, or no key at all.
    * Ciphertext that fails to open under the check's key of the id it names. To a worker
      that is a hostile payload: the order fails before any effect. But the runs the check
      must read are those that took effect or completed, which a worker read with its key
      of that id: so the check's key under that id is another one (a key file typed by
      hand), or the history was altered. Either way what the run was asked is unknown, and
      a verdict on it would be a guess.
    """

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        super().__init__(list(keys) or [(NO_KEY, os.urandom(32))], encrypt=False)
        self.key_ids = [key_id for key_id, _ in keys]

    def _decrypt(self, payload: Payload) -> Payload:
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        try:
            opened = super()._decrypt(payload)
        except CodecKeyError:
            has = ", ".join(map(repr, self.key_ids)) or "no key at all"
            raise CodecKeyError(
                f"payload encrypted with key {key_id!r}, which this check does not have "
                f"(it has {has})"
            ) from None
        if opened.metadata.get("encoding") == UNREADABLE_ENCODING and self._well_formed(payload):
            raise CodecKeyError(
                f"payload encrypted with key {key_id!r} does not open with this check's key "
                f"of that id ({opened.data.decode(errors='replace')}): not the key it was "
                "written with, or the history was altered"
            )
        return opened

    def _well_formed(self, payload: Payload) -> bool:
        """Ciphertext under a key id the check holds: what fails then is the key."""
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        return (
            payload.metadata.get("encoding") == ENCODING
            and KEY_ID_PATTERN.fullmatch(key_id) is not None
            and key_id in self.key_ids
            and len(payload.data) >= NONCE_BYTES + TAG_BYTES
        )


def reading_converter() -> DataConverter:
    """The codec with the keys there are, creating none: without a key, encrypted payloads
    cannot be read (the check then says so) and plain ones read as they are."""
    return dataclasses.replace(DataConverter.default, payload_codec=ReadingCodec(existing_keys()))
