"""One module per CLI command, each exposing a click object named `command`."""
