"""DVC stage `preprocess`: thin wrapper over `dermdl preprocess` (see dermdl/pipeline.py).

dvc repro preprocess                 # as part of the pipeline
python stages/preprocess.py --params params.yaml   # by hand, same thing
"""

import sys

from dermdl.cli import main

if __name__ == "__main__":
    sys.exit(main(["preprocess", *sys.argv[1:]]))
