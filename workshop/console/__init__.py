"""The control room: a live picture of the stack, and the controls to break it on purpose."""
