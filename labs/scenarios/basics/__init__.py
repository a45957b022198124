"""Part 1, the work queue: hello world, several workers, losing messages, acknowledgements, fair dispatch (labs 1-5)."""
