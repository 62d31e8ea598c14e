import pytest


@pytest.fixture(scope="session")
def codec():
    """The codec the devices send by default."""
    from wardmodels import runtime
    from wardstream.settings import Settings

    model_id = Settings().codec_model
    assert model_id in runtime.deployed_ids(), "default codec missing from wardmodels/weights/MANIFEST.json"
    return runtime.load_deployed(model_id)


@pytest.fixture(scope="session")
def ecg_windows(data_dir):
    """Band-passed 2-s windows of MIT-BIH record 100 (DS2, never trained on), 5 minutes."""
    from wardmodels.frontend import filter_record
    from wardstream.datasets import load_mitdb

    x = filter_record(load_mitdb(data_dir, "100").ecg_mv)[: 150 * 256]
    return x.reshape(150, 256)


@pytest.fixture(scope="session")
def eeg_windows(data_dir):
    """F3 of eegmat subject 25 (test subject), with its simultaneous ECG, 2 minutes."""
    from wardmodels.frontend import filter_record
    from wardstream.datasets import load_eegmat

    rec = load_eegmat(data_dir, [25])[0]
    eeg = filter_record(rec.eeg_uv[0])[: 60 * 256].reshape(60, 256)
    ecg = filter_record(rec.ecg_mv)[: 60 * 256].reshape(60, 256)
    return eeg, ecg
