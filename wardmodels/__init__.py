"""The neural models shared by the edge (simulated devices, firmware) and the cloud (workers)."""

# The wire model the devices encode with by default: the deployed Dynamic-Deep codec (levels 0-5 and
# its calibrated predictors). Training, evaluation and the cost model default to it too.
DD_MODEL = 5
