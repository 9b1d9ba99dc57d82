"""fairseq, used as it is: its file formats, a task-agnostic training launcher, safe
checkpoint loading, and the user_dir plugin with our fixes to fairseq."""
