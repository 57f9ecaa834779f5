"""DVC stage `train`: thin wrapper over `dermdl train` (see dermdl/pipeline.py).

dvc repro train                 # as part of the pipeline
python stages/train.py --params params.yaml   # by hand, same thing
"""

import sys

from dermdl.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
