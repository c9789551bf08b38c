"""What runs on a rack computer: the node, its rack of phones (rack -> phone -> device
driver), playback, capture and the screen matcher."""
