"""A reference external processor: waits for ready groups, averages the clients' arrays, posts the mean."""
