"""The Redis board (``redis://`` and ``rediss://``): see :mod:`jobboard.redis.board`."""

from jobboard.redis.board import RedisBoard

__all__ = ["RedisBoard"]
