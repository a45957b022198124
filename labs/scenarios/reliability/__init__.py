"""Part 2, keeping messages: durability, purging and deleting, heartbeats, poison messages (labs 6-9; a full queue
belongs here too)."""
