"""`kq bench`: the benchmark suite, its cases, the machine description and the report."""
