"""The end-to-end demo: flows run against the bundled simulator on loopback."""
