"""DVC stage `validate-layout`: thin wrapper over `dermdl validate` (see dermdl/pipeline.py).

dvc repro validate-layout                 # as part of the pipeline
python stages/validate_layout.py --params params.yaml   # by hand, same thing
"""

import sys

from dermdl.cli import main

if __name__ == "__main__":
    sys.exit(main(["validate", *sys.argv[1:]]))
