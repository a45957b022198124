"""Part 3, around the queue: a web API in front of it, a cluster under it (labs 10-11)."""
