"""Control messages: what a device accepts, what it rejects (with a reason), and which bound wins."""

import json

import pytest

from device_sim.control import (WARD_KEY, Bounds, ControlError, message, parse, predictor_key, slack_key,
                                slack_message)


def test_ward_and_bed_messages_parse():
    assert parse(WARD_KEY, message(0.4)) == ("bound", None, 0.4)
    assert parse(b"bed-000012", message(0.1)) == ("bound", 12, 0.1)
    assert parse(b"bed-000012", message(None)) == ("bound", 12, None)
    assert slack_key(12) == b"slack-000012"
    assert parse(slack_key(12), slack_message(0.25)) == ("slack", 12, 0.25)
    assert parse(slack_key(12), slack_message(0.0)) == ("slack", 12, 0.0)
    assert parse(slack_key(12), slack_message(None)) == ("slack", 12, None)
    # a ward-wide bound for the beds whose devices run one error predictor (its 12-hex-digit id)
    assert parse(b"ward-7001013349ae", message(0.25)) == ("bound", "7001013349ae", 0.25)
    assert parse(predictor_key("7001013349ae"), message(None)) == ("bound", "7001013349ae", None)


@pytest.mark.parametrize("key,value,reason", [
    (b"ward-7", message(0.4), "bad_key"),
    (b"ward-7001013349AE", message(0.4), "bad_key"),  # ids are lower-case hex
    (b"ward-7001013349a", message(0.4), "bad_key"),
    (b"ward-7001013349ae", message(-1), "bad_bound"),
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


def test_a_predictors_bound_sits_between_the_beds_and_the_wards():
    b = Bounds(default=0.5)
    rhythm, default = "7001013349ae", "f9c270e154dc"
    assert b.apply(WARD_KEY, message(0.4))
    assert b.apply(predictor_key(rhythm), message(0.2))
    assert b.for_bed(3, rhythm) == 0.2 and b.for_bed(3, default) == 0.4 and b.for_bed(3) == 0.4
    assert b.apply(b"bed-000003", message(0.1))
    assert b.for_bed(3, rhythm) == 0.1 and b.for_bed(4, rhythm) == 0.2  # the bed's own wins
    assert b.apply(predictor_key(rhythm), message(None))  # cleared: back to the ward's
    assert b.for_bed(4, rhythm) == 0.4 and b.predictors == {}
    with pytest.raises(ControlError):
        predictor_key("not-an-id")


def test_a_slack_correction_never_touches_the_bound():
    b = Bounds(default=0.5)
    assert b.apply(b"bed-000003", message(0.2))
    assert b.apply(slack_key(3), slack_message(0.3))
    assert b.for_bed(3) == 0.2 and b.slack_for(3) == 0.3 and b.slack_for(4) == 0.0
    assert not b.apply(slack_key(3), b'{"slack": -1}')
    assert b.slack_for(3) == 0.3
    assert b.apply(slack_key(3), slack_message(None))
    assert b.slack_for(3) == 0.0 and b.for_bed(3) == 0.2


@pytest.mark.servers
def test_the_cli_sets_clears_and_shows_a_predictors_bound(ward_settings, monkeypatch, capsys):
    """`wardstream control bound B --predictor KIND|FILE|ID` publishes under the predictor's id
    (a kind named by the devices' codec); `control show` lists it; a bad name exits with 2."""
    from wardmodels import DD_MODEL
    from wardmodels.runtime import load_deployed
    from wardstream.cli import main
    from wardstream.settings import to_env

    for k, v in to_env(ward_settings.replace(codec_model=DD_MODEL)).items():
        monkeypatch.setenv(k, v)
    rid = load_deployed(DD_MODEL).predictor_of("rhythm").digest
    assert main(["control", "bound", "0.3", "--predictor", "rhythm"]) == 0
    assert json.loads(capsys.readouterr().out)["predictor"] == rid
    assert main(["control", "bound", "0.2", "--predictor", "0123456789ab"]) == 0
    assert main(["control", "bound", "0.2", "--predictor", "no-such-kind"]) == 2
    assert main(["control", "bound", "clear", "--predictor", "0123456789ab"]) == 0
    capsys.readouterr()
    import asyncio

    from device_sim.control import publish_holds

    asyncio.run(publish_holds(ward_settings, {5: (1, "nsvt"), 6: (0, "asystole")}))
    asyncio.run(publish_holds(ward_settings, {6: (None, "")}))
    assert main(["control", "show"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["predictors"] == {rid: 0.3} and shown["holds"] == {"5": 1}  # a worker's hold, listed
