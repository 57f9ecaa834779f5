"""Clinical evaluation shared by every task: calibration, operating points, metadata and subgroups.

The arithmetic lives here once (tested against references); each task's analyze module decides which of
it applies and feeds it that task's predictions.
"""
