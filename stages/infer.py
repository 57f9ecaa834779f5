"""DVC stage `infer`: thin wrapper over `dermdl infer` (see dermdl/pipeline.py).

dvc repro infer                 # as part of the pipeline
python stages/infer.py --params params.yaml   # by hand, same thing
"""

import sys

from dermdl.cli import main

if __name__ == "__main__":
    sys.exit(main(["infer", *sys.argv[1:]]))
