"""Tests of the job board packages, one folder per backend."""
