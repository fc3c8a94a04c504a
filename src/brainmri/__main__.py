import sys

from brainmri.cli import main

sys.exit(main())
