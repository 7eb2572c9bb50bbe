"""Classroom assignments built from the chapters (``kq assignments``, ``kq grade``)."""
