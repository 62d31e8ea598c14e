"""Control messages: what a device accepts, what it rejects (with a reason), and which bound wins."""

import json

import pytest

from device_sim.control import WARD_KEY, Bounds, ControlError, message, parse, slack_key, slack_message


def test_ward_and_bed_messages_parse():
    assert parse(WARD_KEY, message(0.4)) == ("bound", None, 0.4)
    assert parse(b"bed-000012", message(0.1)) == ("bound", 12, 0.1)
    assert parse(b"bed-000012", message(None)) == ("bound", 12, None)
    assert slack_key(12) == b"slack-000012"
    assert parse(slack_key(12), slack_message(0.25)) == ("slack", 12, 0.25)
    assert parse(slack_key(12), slack_message(0.0)) == ("slack", 12, 0.0)
    assert parse(slack_key(12), slack_message(None)) == ("slack", 12, None)


@pytest.mark.parametrize("key,value,reason", [
    (b"ward-7", message(0.4), "bad_key"),
    (None, message(0.4), "bad_key"),
    (b"bed-12a", message(0.4), "bad_key"),
    (WARD_KEY, b"{not json", "bad_json"),
    (WARD_KEY, b"", "bad_json"),
    (WARD_KEY, json.dumps({"limit": 0.4}).encode(), "no_bound"),
    (WARD_KEY, json.dumps([0.4]).encode(), "no_bound"),
    (WARD_KEY, json.dumps({"bound": -1}).encode(), "bad_bound"),
    (WARD_KEY, json.dumps({"bound": 0}).encode(), "bad_bound"),
    (WARD_KEY, b'{"bound": NaN}', "bad_bound"),
    (WARD_KEY, b'{"bound": Infinity}', "bad_bound"),
    (WARD_KEY, json.dumps({"bound": True}).encode(), "bad_bound"),
    (WARD_KEY, json.dumps({"bound": "0.4"}).encode(), "bad_bound"),
    (b"slack-", slack_message(0.1), "bad_key"),
    (b"slack-000003", message(0.4), "no_slack"),  # a bound under a slack key is not a slack
    (b"bed-000003", slack_message(0.1), "no_bound"),
    (b"slack-000003", json.dumps({"slack": -0.1}).encode(), "bad_slack"),
    (b"slack-000003", json.dumps({"slack": 11}).encode(), "bad_slack"),
    (b"slack-000003", b'{"slack": NaN}', "bad_slack"),
    (b"slack-000003", json.dumps({"slack": "0.1"}).encode(), "bad_slack"),
])
def test_malformed_messages_are_rejected_with_a_reason(key, value, reason):
    with pytest.raises(ControlError) as ei:
        parse(key, value)
    assert ei.value.reason == reason


def test_the_most_specific_bound_wins_and_bad_messages_change_nothing():
    b = Bounds(default=0.5)
    assert b.for_bed(3) == 0.5
    assert b.apply(WARD_KEY, message(0.3))
    assert b.for_bed(3) == 0.3
    assert b.apply(b"bed-000003", message(0.05))
    assert b.for_bed(3) == 0.05 and b.for_bed(4) == 0.3
    assert not b.apply(b"bed-000003", b'{"bound": -2}')
    assert b.for_bed(3) == 0.05
    assert b.rejected == {"bad_bound": 1}
    assert b.apply(b"bed-000003", message(None))  # cleared: back to the ward's bound
    assert b.for_bed(3) == 0.3
    assert b.applied == 3


def test_a_slack_correction_never_touches_the_bound():
    b = Bounds(default=0.5)
    assert b.apply(b"bed-000003", message(0.2))
    assert b.apply(slack_key(3), slack_message(0.3))
    assert b.for_bed(3) == 0.2 and b.slack_for(3) == 0.3 and b.slack_for(4) == 0.0
    assert not b.apply(slack_key(3), b'{"slack": -1}')
    assert b.slack_for(3) == 0.3
    assert b.apply(slack_key(3), slack_message(None))
    assert b.slack_for(3) == 0.0 and b.for_bed(3) == 0.2
