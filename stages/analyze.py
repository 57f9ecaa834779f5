"""DVC stage `analyze`: thin wrapper over `dermdl analyze` (see dermdl/pipeline.py).

dvc repro analyze                 # as part of the pipeline
python stages/analyze.py --params params.yaml   # by hand, same thing
"""

import sys

from dermdl.cli import main

if __name__ == "__main__":
    sys.exit(main(["analyze", *sys.argv[1:]]))
