"""The worker process (``python worker.py``): what it builds and runs is :mod:`kairos.worker`."""

from kairos.worker import main

if __name__ == "__main__":
    main()
