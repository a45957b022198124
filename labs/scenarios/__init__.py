"""Proving the handouts: each lab's scenario and claims, the runner that checks them on a real broker, and the demo."""
