"""Part 2, keeping messages: durability, purging and deleting, heartbeats, poison messages (labs 6-9), and a full
queue (lab 12, after the systems part in course order: it builds on dead letters)."""
