"""Encrypted payloads: card numbers and names never reach the Temporal server in clear.

Every payload (order, activity inputs and results, summaries) is encrypted with AES-GCM
before it leaves the process, and tagged with the id of its key so keys can be rotated:
the newest key encrypts, every known key decrypts. Plain payloads are decoded as they are,
so a worker still serves clients that send plain JSON (the exercise's starter, the
``temporal`` CLI); ``pizzeria worker --plain-payloads`` also answers them in plain JSON.

Keys come from ``PIZZERIA_CODEC_KEY`` (base64 of 32 bytes), else from the key file
``$PIZZERIA_DATA_DIR/codec.key`` (created with owner-only permissions on first use; one
``id:base64`` per line, newest first). A key file another user owns or could write is
refused (see pizzeria.private): whoever plants a key reads every order encrypted under it.
``pizzeria codec-server`` lets the Web UI decrypt.

Ciphertext that cannot be opened is told apart by whose fault it is. Garbage, a payload
naming no key, or one that fails authentication under a key this process has, is bad
input: it is handed on as an *unreadable* payload, which the worker's strict converter
turns into a failed order (raising here, outside the workflow, would fail the workflow
task forever instead). A well-formed payload under a key id this process lacks is a
deploy without the right key (a rotation half done): decoding raises `CodecKeyError`,
so the workflow task fails, visibly and retried, until a worker with the key takes it.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
)

from pizzeria import config
from pizzeria.private import UnsafeSecret, make_private_dir, read_private_file
from pizzeria.temporal.converter import unreadable_payload

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
TAG_BYTES = 16  # AES-GCM's authentication tag, at the end of the ciphertext
#: What a key id may be (ours are 12 hex digits): a payload naming anything else names no key.
KEY_ID_PATTERN = re.compile(r"[!-~]{1,128}")
#: The shape of the ids this program makes: the first 12 hex digits of the key's SHA-256.
HASH_ID = re.compile(r"[0-9a-f]{12}")


class CodecKeyError(RuntimeError):
    pass


def key_id_of(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:12]


def key_file() -> Path:
    return Path(os.environ.get("PIZZERIA_CODEC_KEY_FILE", str(config.data_dir() / "codec.key")))


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise CodecKeyError(f"{where}: the key is not valid base64") from None
    if len(key) != 32:
        raise CodecKeyError(f"{where}: the key must be 32 bytes (AES-256), got {len(key)}")
    return key


def load_keys(create: bool = True) -> list[tuple[str, bytes]]:
    """(key id, key) pairs, newest first. Creates the key file when there is no key."""
    from_env = os.environ.get("PIZZERIA_CODEC_KEY")
    if from_env:
        key = _decode_key(from_env, "PIZZERIA_CODEC_KEY")
        return [(key_id_of(key), key)]
    path = key_file()
    if not os.path.lexists(path):
        if not create:
            raise CodecKeyError(f"no key: set PIZZERIA_CODEC_KEY or create {path}")
        _create_key_file(path)
    try:
        text = read_private_file(path, "codec key")
    except UnsafeSecret as unsafe:
        raise CodecKeyError(str(unsafe)) from None
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            key_id, _, text = line.strip().partition(":")
            where = f"{path} line {number}"
            if not KEY_ID_PATTERN.fullmatch(key_id):
                raise CodecKeyError(f"{where}: the key id must be 1 to 128 visible characters")
            key = _decode_key(text, where)
            if HASH_ID.fullmatch(key_id) and key_id != key_id_of(key):
                # An id names one key on every machine: a payload names the key it needs by
                # it. A line whose id is another key's (a rotation typed by hand) would
                # make this machine fail every order sealed under the real one. An id of
                # another shape (named by hand, before ids were hashes) is taken as given.
                raise CodecKeyError(
                    f"{where}: the key id {key_id} is not this key's (its id is "
                    f"{key_id_of(key)}, the first 12 hex digits of its SHA-256): copy the "
                    "line whole from the machine that made the key"
                )
            keys.append((key_id, key))
    if not keys:
        raise CodecKeyError(f"{path} holds no key")
    return keys


def _create_key_file(path: Path) -> None:
    make_private_dir(path.parent)
    key = AESGCM.generate_key(bit_length=256)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process made it first: read theirs
    with os.fdopen(descriptor, "w") as handle:
        handle.write(f"{key_id_of(key)}:{base64.b64encode(key).decode()}\n")


class EncryptionCodec(PayloadCodec, WithSerializationContext):
    """AES-GCM over whole payloads; the key id travels in the payload's metadata.

    A codec that answers plain (``encrypt=False``, `pizzeria worker --plain-payloads`)
    answers plain only what a client reads: the workflow's input, result, updates and
    queries. What goes to and from activities (the card number on its way to the charge)
    is encrypted all the same: the SDK hands it over in an activity's context. So are the
    summaries of the steps and timers (one names the customer's street): the worker's
    walk over its completions (`pizzeria.temporal.one_walk`) hands them to `sealing`.
    """

    def __init__(
        self,
        keys: Sequence[tuple[str, bytes]],
        encrypt: bool = True,
        reader: bool = False,
        serving: bool = False,
    ) -> None:
        self.current_id, current = keys[0]
        self.cipher = AESGCM(current)
        self.ciphers = {key_id: AESGCM(key) for key_id, key in keys}
        self.encrypt = encrypt
        self.reader = reader  # a command that only reads orders: no order waits on it
        self.serving = serving  # the codec endpoint, for the Web UI (a reader)

    def with_context(self, context: SerializationContext) -> Self:
        if self.encrypt or not isinstance(context, ActivitySerializationContext):
            return self
        return self.sealing()

    def sealing(self) -> Self:
        """This codec, encrypting (itself, when it does already)."""
        if self.encrypt:
            return self
        sealing = copy.copy(self)
        sealing.encrypt = True
        return sealing

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        if not self.encrypt:
            return list(payloads)
        return [self._encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._decrypt(payload) for payload in payloads]

    def _encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self.cipher.encrypt(nonce, payload.SerializeToString(), None)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID: self.current_id.encode()},
            data=nonce + sealed,
        )

    def _decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # plain: from a client without the codec
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        data = payload.data
        if not KEY_ID_PATTERN.fullmatch(key_id):
            return unreadable_payload("encrypted payload names no valid key id")
        if len(data) < NONCE_BYTES + TAG_BYTES:
            return unreadable_payload("encrypted payload too short to be AES-GCM ciphertext")
        cipher = self.ciphers.get(key_id)
        if cipher is None:
            then = (
                "; the order waits for a worker that has it"
                if not self.reader
                else " and start the codec endpoint again (it reads its keys when it starts)"
                if self.serving
                else " to read it"
            )
            raise CodecKeyError(
                f"payload encrypted with key {key_id!r}, which this process does not have "
                f"(it has {', '.join(map(repr, self.ciphers))}): add that key to "
                f"PIZZERIA_CODEC_KEY or the key file{then}"
            )
        try:
            sealed = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], None)
        except InvalidTag:
            return unreadable_payload(f"encrypted payload fails authentication under key {key_id}")
        try:
            return Payload.FromString(sealed)
        except DecodeError:
            return unreadable_payload("decrypted payload is not a Temporal payload")


def no_key_yet() -> bool:
    """Whether `load_keys` would make a new key (no PIZZERIA_CODEC_KEY, no key file)."""
    return not os.environ.get("PIZZERIA_CODEC_KEY") and not os.path.lexists(key_file())


def existing_keys() -> list[tuple[str, bytes]]:
    """`load_keys`, creating none: no key at all is an empty list."""
    return [] if no_key_yet() else load_keys(create=False)


class NoCodecKey(CodecKeyError):
    """No key at all here: nothing encrypted can be read (not one payload's missing key)."""


class KeylessCodec(PayloadCodec):
    """What a reader that found no key holds: plain payloads pass, and an encrypted one is
    one line saying where the key was looked for (a command run outside the folder of the
    server and the worker, which would otherwise make a key of its own there)."""

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        for payload in payloads:
            if payload.metadata.get("encoding") == ENCODING:
                raise NoCodecKey(
                    f"the orders are encrypted and there is no codec key here ({key_file()}, "
                    "or PIZZERIA_CODEC_KEY): run this in the folder the server and the worker "
                    "run in, or set PIZZERIA_DATA_DIR"
                )
        return list(payloads)


def data_converter(encrypt: bool = True, create_key: bool = True) -> DataConverter:
    """The default converter with our codec: encrypting (or, plain, only decrypting). A
    reader (``create_key=False``) makes no key file where there is none."""
    keys = load_keys() if create_key else existing_keys()
    reading = not create_key  # a reader: `status`, `orders`
    codec = EncryptionCodec(keys, encrypt=encrypt, reader=reading) if keys else KeylessCodec()
    return dataclasses.replace(DataConverter.default, payload_codec=codec)
