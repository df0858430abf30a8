"""``python -m lstmcast ...`` (and ``torchrun ... -m lstmcast -- train ...``): the ``lstmcast`` command."""

from lstmcast.cli import main

if __name__ == "__main__":
    main()
