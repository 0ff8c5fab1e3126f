"""Bytes no well-behaved client can send, straight onto the wire.

A protobuf library refuses to serialize a string field holding invalid UTF-8,
so these requests are assembled by hand and sent through a channel that does
no serialization of its own. The driver must answer INVALID_ARGUMENT, never
UNKNOWN or INTERNAL, and keep serving.
"""

from __future__ import annotations

import os

import grpc
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from csi_driver.csi.v1 import csi_pb2
from csi_driver.sandbox import kubelet
from fuzz import harness, strategies

FUZZ = settings(max_examples=harness.examples(), deadline=None, database=None,
                suppress_health_check=list(HealthCheck), print_blob=True)
LEN = 2  # protobuf wire type of length-delimited fields


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | LEN) + varint(len(payload)) + payload


def nest(path: tuple[int, ...], payload: bytes) -> bytes:
    """``payload`` as the string at field ``path`` (outermost first), e.g.
    (5, 1, 1) = volume_capability.mount.fs_type; a map key or value is
    (map field, 1) or (map field, 2)."""
    for number in reversed(path):
        payload = length_delimited(number, payload)
    return payload


def string_fields(descriptor, prefix: tuple[int, ...] = (), names: str = "", depth: int = 0):
    """(field-number path, dotted name) of every string field reachable in
    ``descriptor``, map keys and values and repeated strings included."""
    for fd in descriptor.fields:
        path, name = prefix + (fd.number,), f"{names}{fd.name}"
        if fd.type == FieldDescriptor.TYPE_STRING:
            yield path, name
        elif fd.type == FieldDescriptor.TYPE_MESSAGE and depth < 3:
            if fd.message_type.GetOptions().map_entry:
                for entry in fd.message_type.fields:
                    if entry.type == FieldDescriptor.TYPE_STRING:
                        yield path + (entry.number,), f"{name}[{entry.name}]"
            else:
                yield from string_fields(fd.message_type, path, name + ".", depth + 1)


def wire_cases(layout) -> list[tuple[str, tuple[int, ...], str, bytes]]:
    """(method, field path, field name, a valid request to append to) for every
    string field of every request."""
    valid = {
        "NodePublishVolume": kubelet.publish_request_at(
            layout.target(), strategies.VOLUME_IDS[0], {"type": "DSDSocketDirectory"}),
        "NodeUnpublishVolume": csi_pb2.NodeUnpublishVolumeRequest(
            volume_id=strategies.VOLUME_IDS[0], target_path=layout.target()),
        "NodeGetVolumeStats": csi_pb2.NodeGetVolumeStatsRequest(
            volume_id=strategies.VOLUME_IDS[0], volume_path=layout.target()),
    }
    cases = []
    for method, descriptor in harness.methods():
        base = valid.get(method.rsplit("/", 1)[1])
        for path, name in string_fields(descriptor):
            cases.append((method, path, name, base.SerializeToString() if base else b""))
    return cases


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


invalid_utf8 = st.one_of(
    st.sampled_from([b"\xff", b"\xc3", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                     b"\xc0\xaf", b"/var/lib/kubelet/pods/\xff/mount", b"DSDSocket\x80"]),
    st.binary(min_size=1, max_size=64).filter(_not_utf8),
    st.builds(lambda a, b, c: a.encode() + b + c.encode(), st.text(max_size=16),
              st.sampled_from([b"\x80", b"\xfe", b"\xe2\x82"]), st.text(max_size=16)),
)


def test_every_string_field_refuses_invalid_utf8(counted):
    fuzz = counted
    cases = wire_cases(fuzz.layout)
    fields = {(method, name) for method, _, name, _ in cases}
    seen: set[tuple[str, str]] = set()

    @FUZZ
    @given(st.sampled_from(cases), invalid_utf8, st.booleans())
    def run(case, raw, append):
        method, path, name, base = case
        seen.add((method, name))
        # Appended after a valid request (protobuf merges) or sent alone.
        payload = (base if append else b"") + nest(path, raw)
        code, details = fuzz.send(method, payload, f"{method} {name}={raw!r}")
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (method, name, code, details)
        assert "UTF-8" in details, details
        fuzz.check()

    run()
    harness.report(f"fuzz[wire]: {len(seen)} of {len(fields)} string fields got invalid UTF-8")


def test_arbitrary_bytes_on_the_wire(counted):
    """Garbage, truncated and over-long messages for every call."""
    fuzz = counted
    names = [method for method, _ in harness.methods()]
    valid = kubelet.publish_request_at(fuzz.layout.target(), strategies.VOLUME_IDS[0],
                                       {"type": "DSDSocket"}).SerializeToString()
    payloads = st.one_of(
        st.binary(max_size=512),
        st.integers(0, len(valid) - 1).map(lambda n: valid[:n]),  # truncated
        st.builds(lambda n, fill: varint(4 << 3 | LEN) + varint(n) + fill,
                  st.integers(0, 2**32), st.binary(max_size=16)),  # length beyond the end
        st.builds(lambda tag: varint(tag), st.integers(0, 2**64 - 1)),  # lone (bad) tags
    )

    @FUZZ
    @given(st.sampled_from(names), payloads)
    def run(method, payload):
        fuzz.send(method, payload)
        fuzz.check()

    run()


def test_oversized_messages(counted):
    """Just under gRPC's 4 MiB receive limit the driver validates the request;
    above it gRPC itself refuses with RESOURCE_EXHAUSTED. Either way it keeps
    serving."""
    fuzz = counted
    limit = 4 * 1024 * 1024
    base = kubelet.publish_request_at("", strategies.VOLUME_IDS[0],
                                      {"type": "DSDSocket"}).SerializeToString()
    for size, expected in ((limit - len(base) - 16, grpc.StatusCode.INVALID_ARGUMENT),
                           (limit + 1, grpc.StatusCode.RESOURCE_EXHAUSTED),
                           (64 * limit, grpc.StatusCode.RESOURCE_EXHAUSTED)):
        path = fuzz.layout.target("good", "a", "")
        payload = base + length_delimited(4, os.fsencode(path + "m" * (size - len(path))))
        code, details = fuzz.send("/csi.v1.Node/NodePublishVolume", payload, f"{size} bytes",
                                  allowed=harness.ALLOWED | {grpc.StatusCode.RESOURCE_EXHAUSTED})
        assert code == expected, (size, code, details)
        fuzz.check()
