"""`python -m lrcn`: list the command-line tools this installation provides."""

from importlib.metadata import entry_points


def tool_names():
    return sorted(point.name for point in entry_points(group="console_scripts")
                  if point.dist is not None and point.dist.name == "lrcn")


def main():
    print("lrcn command-line tools (each takes --help):")
    for name in tool_names():
        print("  " + name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
