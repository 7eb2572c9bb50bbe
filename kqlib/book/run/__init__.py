"""Running the book: the runner, resume records, progress lines, measured timings."""
