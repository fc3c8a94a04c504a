import sys

from brainmri.cli.command import main

sys.exit(main())
