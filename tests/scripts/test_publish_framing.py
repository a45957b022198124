"""sender.py frames most messages itself (one write per batch); what it sends must be what basic_publish would."""
from __future__ import annotations


def test_bodies_larger_than_a_frame_and_empty_ones_arrive_whole_with_their_properties(space):
    # The broker's frame_max is 128 KiB: a 300,000-byte body spans three body frames, a one-frame body and an empty
    # one (no body frame at all) go alongside it, persistent, each with its message id.
    big = "x" * 300_000  # too long for an argument: on standard input
    space.send("--queue", "framing", "--persistent", "short", "")
    space.send("--queue", "framing", "--persistent", input=big + "\n")
    channel, received = space.channel(), []
    while True:
        method, properties, body = channel.basic_get("framing", auto_ack=True)
        if method is None:
            break
        received.append((body, properties.delivery_mode, properties.message_id))
    assert [body for body, _, _ in received] == [b"short", b"", big.encode()]
    assert all(mode == 2 for _, mode, _ in received)
    assert len({message_id for _, _, message_id in received}) == 3 and all(m for _, _, m in received)
