"""Dataset layout scanning: find every item of a dataset and every problem with it, up front.

Why a separate step: a pipeline that discovers a broken file or a missing class folder an hour
into training wastes the run; scanning first lets a stage refuse to start and print ALL problems,
each with the exact path and a fix. Each task's scanner is its ``dermdl.tasks.<task>.layout``;
this package holds what they share.
"""

from dermdl.layout.items import Item
from dermdl.layout.report import Problem, Report

__all__ = ["Item", "Problem", "Report"]
