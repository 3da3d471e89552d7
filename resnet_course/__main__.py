"""``python -m resnet_course ...``: see ``resnet_course.cli``."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
