"""DVC stage `demo-data`: thin wrapper over `dermdl demo-data` (see dermdl/pipeline.py).

dvc repro demo-data                 # as part of the pipeline
python stages/demo_data.py --params params.yaml   # by hand, same thing
"""

import sys

from dermdl.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo-data", *sys.argv[1:]]))
