"""Examples that use the File Dropbox APIs from the outside: a reference processor, a pool simulator."""
