"""How the check reads Temporal's payloads: with the keys there are, creating none."""

from __future__ import annotations

import dataclasses
import os

from temporalio.converter import DataConverter

from pizzeria.temporal.codec import EncryptionCodec, key_file, load_keys


def reading_converter() -> DataConverter:
    """The codec with the keys there are, creating none: without a key, encrypted payloads
    stay unreadable (the check then says so) and plain ones read as they are."""
    if os.environ.get("PIZZERIA_CODEC_KEY") or key_file().exists():
        keys = load_keys(create=False)
    else:
        keys = [("no key", os.urandom(32))]  # names no key id a payload can carry
    codec = EncryptionCodec(keys, encrypt=False)
    return dataclasses.replace(DataConverter.default, payload_codec=codec)
