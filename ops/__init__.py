"""Running the whole stack on one machine: supervisord (`make run`)."""
