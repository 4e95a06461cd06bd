"""Stand-in for PyAV on the device machine, which has no PyAV and no registry: the benchmark streams 16 kHz
PCM, which never reaches a container decoder or a resampler. Any use raises."""


class _Missing:
    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> "_Missing":
        return _Missing(f"{self._name}.{attr}")

    def __call__(self, *args: object, **kwargs: object) -> object:
        raise RuntimeError(f"PyAV is not installed here ({self._name})")

    def __mro_entries__(self, bases: tuple) -> tuple:
        return (Exception,)


class FFmpegError(Exception):
    pass


def __getattr__(name: str) -> _Missing:
    return _Missing(f"av.{name}")
