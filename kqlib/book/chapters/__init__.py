"""One module per notebook (chNN_<name>.py, the notebook's name): its frames, figures and claim measurements."""
