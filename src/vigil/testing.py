"""Conformance kit for signal types: subclass :class:`SignalTypeContract`, get the generic tests.

Every signal type, built-in or plug-in, promises the same things: a literal lower-case ``name``
that the registry knows, examples that are already normalised, one canonical ``type:value`` form
that round-trips through :meth:`vigil.signals.Signal.parse`, validation that rejects junk with
:class:`vigil.errors.InvalidSignal`, a distance that is zero on itself and symmetric (and, for a
Hamming type, the popcount of the index codes), index codes of ``code_size`` bytes, and thresholds
that make sense. Hashers also promise to be deterministic and to tell unrelated content apart;
image hashers whose value is itself a perceptual fingerprint (``distance_kind == "hamming"``)
promise that a lightly edited copy (JPEG quality 50, a 1-pixel blur, a 75% downscale) stays within
``default_threshold``. A plug-in's test module states its type and inherits all of that::

    from vigil.testing import SignalTypeContract
    from my_plugin import MySignal

    class TestMySignalContract(SignalTypeContract):
        TYPE = MySignal
        INVALID = ("not-a-hash", "0" * 31)  # optional: bad values of your own

The class name must start with ``Test`` for pytest to collect it; the base class itself is never
collected. The kit imports neither pytest nor anything outside Vigil's core dependencies (it
fails with plain :class:`AssertionError`, which also survives ``python -O``), so ``import vigil``
and plug-ins importing this module never need pytest.

Rejection checks derived from the examples: every type must reject the empty string,
whitespace and ``None``-like strings. When all examples are hex strings of one length the type is
taken to be fixed-length hex and must also reject other lengths and non-hex characters (``0x``
prefixes, signs, ``_``, non-ASCII digits); set ``HEX_DIGITS = None`` to opt out, or to a number
to state the length yourself.

Image hashers are exercised on pictures made here (:func:`synthetic_image`), so the kit needs no
test media. A subclass whose ``TYPE`` is an :class:`~vigil.signals.base.ImageHasher` gets the image
tests, one whose ``TYPE`` is a :class:`~vigil.signals.base.FileHasher` the file tests; they are
attached when the subclass is created, so no test is ever skipped for not applying. (Rotation is
not among the light edits: PDQ moves 20-35 bits for a 1° turn, too close to its threshold to be a
promise.)
"""

from __future__ import annotations

import hashlib
import inspect
import io
import itertools
import re
import tempfile
import typing as t
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vigil.errors import InvalidSignal
from vigil.media.image import decode_image
from vigil.signals.base import ContentKind, FileHasher, ImageHasher, Signal, SignalType

__all__ = ["SignalTypeContract", "encode_image", "synthetic_image"]

_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
_HEX = re.compile(r"[0-9a-f]+")


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


_UNSET = _Unset()

#: values no signal type may accept
_ALWAYS_INVALID: tuple[str, ...] = (
    "",
    " ",
    "\t\n",
    "None",
    "none",
    "null",
    "NULL",
    "nan",
    "NaN",
    "undefined",
)


def synthetic_image(seed: int, size: tuple[int, int] = (256, 192)) -> Image.Image:
    """A photo-like RGB picture that depends only on ``seed``; different seeds are unrelated.

    A smooth colour field with a few flat shapes kept away from the edges, plus mild noise: enough
    texture for a perceptual hash to have full quality, and no flat edge that border trimming
    could take for padding.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    field = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(field).resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    mx, my = max(1, width // 16), max(1, height // 16)
    for _ in range(10):
        x0 = int(rng.integers(mx, max(mx + 1, width * 3 // 4)))
        y0 = int(rng.integers(my, max(my + 1, height * 3 // 4)))
        x1 = min(width - mx, x0 + int(rng.integers(max(1, width // 10), max(2, width // 3))))
        y1 = min(height - my, y0 + int(rng.integers(max(1, height // 10), max(2, height // 3))))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x0, y0, max(x0, x1), max(y0, y1)], fill=colour)
    pixels = np.asarray(img, dtype=np.float32) + rng.normal(0.0, 3.0, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def encode_image(img: Image.Image, fmt: str = "PNG", **options: t.Any) -> bytes:
    """``img`` saved in ``fmt`` (a Pillow format name) as bytes."""
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def _check(condition: object, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _expect_invalid(stype: type[SignalType], values: t.Iterable[str]) -> None:
    accepted: list[str] = []
    wrong: list[str] = []
    for value in values:
        try:
            got = stype.validate(value)
        except InvalidSignal:
            continue
        except Exception as exc:  # noqa: BLE001 - any other exception is the failure we report
            wrong.append(f"{value!r} raised {type(exc).__name__}: {exc}")
        else:
            accepted.append(f"{value!r} -> {got!r}")
    problems = [f"accepted {a}" for a in accepted] + [f"{w}, not InvalidSignal" for w in wrong]
    _check(not problems, f"{stype.name}.validate: " + "; ".join(problems))


class SignalTypeContract:
    """Generic tests every signal type must pass; subclass it and set ``TYPE``."""

    #: the signal type under test
    TYPE: t.ClassVar[type[SignalType]]
    #: extra values that ``TYPE.validate`` must reject, on top of the generic ones
    INVALID: t.ClassVar[t.Sequence[str]] = ()
    #: length of a fixed-length hex value; inferred from the examples when left unset
    HEX_DIGITS: t.ClassVar[int | None | _Unset] = _UNSET
    #: seed of the synthetic picture the image tests start from
    IMAGE_SEED: t.ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: t.Any) -> None:
        super().__init_subclass__(**kwargs)
        stype = getattr(cls, "TYPE", None)
        if stype is None and not cls.__name__.startswith("Test"):
            return  # an intermediate base shared by several contracts; pytest won't collect it
        if not (inspect.isclass(stype) and issubclass(stype, SignalType)):
            raise TypeError(
                f"{cls.__qualname__} must set TYPE to a SignalType subclass, got {stype!r}"
            )
        # Attach the checks for what the type can hash (see the module docstring); a test the
        # subclass defines itself wins.
        perceptual = stype.distance_kind == "hamming"
        for checks, applies in (
            (_FileHasherChecks, issubclass(stype, FileHasher)),
            (_ImageHasherChecks, issubclass(stype, ImageHasher)),
            (_PerceptualImageChecks, issubclass(stype, ImageHasher) and perceptual),
        ):
            if applies:
                for attr, fn in vars(checks).items():
                    if attr.startswith("test_") and not hasattr(cls, attr):
                        setattr(cls, attr, fn)

    # -- helpers ---------------------------------------------------------------------------

    @classmethod
    def _hex_digits(cls) -> int | None:
        if not isinstance(cls.HEX_DIGITS, _Unset):
            return cls.HEX_DIGITS
        examples = cls.TYPE.examples
        lengths = {len(e) for e in examples}
        if examples and len(lengths) == 1 and all(_HEX.fullmatch(e) for e in examples):
            return lengths.pop()
        return None

    @classmethod
    def _registry(cls) -> t.Any:
        from vigil.signals import registry

        if cls.TYPE.name not in registry:
            registry.load_plugins()  # idempotent: registering the same class twice is allowed
        return registry

    # -- name and registration ---------------------------------------------------------------

    def test_name_is_a_literal_lower_case_string(self) -> None:
        raw = inspect.getattr_static(self.TYPE, "name", None)
        _check(
            isinstance(raw, str),
            f"{self.TYPE.__qualname__}.name must be a literal str class attribute, got {raw!r}",
        )
        _check(
            _NAME.fullmatch(t.cast(str, raw)),
            f"{self.TYPE.__qualname__}.name {raw!r} must be lower-case [a-z][a-z0-9-]{{0,31}}",
        )

    def test_registered_under_its_name(self) -> None:
        registry = self._registry()
        _check(
            self.TYPE.name in registry,
            f"{self.TYPE.name!r} is not in vigil.signals.registry (known: {registry.names()}); "
            "add it to BUILTIN_SIGNAL_TYPES or the 'vigil.signal_types' entry-point group",
        )
        _check(
            registry.get(self.TYPE.name) is self.TYPE,
            f"the registry maps {self.TYPE.name!r} to {registry.get(self.TYPE.name)!r}, "
            f"not {self.TYPE!r}",
        )

    def test_declares_what_it_hashes(self) -> None:
        _check(
            issubclass(self.TYPE, (FileHasher, ImageHasher)),
            f"{self.TYPE.name} must derive from FileHasher or ImageHasher",
        )
        kinds = self.TYPE.content_kinds
        _check(
            isinstance(kinds, tuple) and kinds,
            f"{self.TYPE.name}.content_kinds must be a non-empty tuple, got {kinds!r}",
        )
        allowed = set(t.get_args(ContentKind))
        _check(
            set(kinds) <= allowed,
            f"{self.TYPE.name}.content_kinds {kinds!r} has kinds outside {sorted(allowed)}",
        )
        _check(
            self.TYPE.distance_kind in ("exact", "hamming"),
            f"{self.TYPE.name}.distance_kind {self.TYPE.distance_kind!r} is not exact/hamming",
        )

    # -- examples, validation, canonical form --------------------------------------------------

    def test_has_distinct_examples(self) -> None:
        examples = self.TYPE.examples
        _check(
            len(set(examples)) >= 2,
            f"{self.TYPE.name}.examples needs at least two distinct values, got {examples!r}",
        )

    def test_examples_validate_to_themselves(self) -> None:
        for example in self.TYPE.examples:
            got = self.TYPE.validate(example)
            _check(got == example, f"{self.TYPE.name}.validate({example!r}) gave {got!r}")
            _check(
                self.TYPE.validate(got) == got,
                f"{self.TYPE.name}.validate is not idempotent on {got!r}",
            )

    def test_canonical_form_round_trips(self) -> None:
        self._registry()  # Signal.parse looks the type up there
        name = self.TYPE.name
        for example in self.TYPE.examples:
            sig = self.TYPE.signal(example)
            _check(
                sig == Signal(name, example),
                f"{name}.signal({example!r}) gave {sig!r}",
            )
            text = str(sig)
            _check(text == f"{name}:{example}", f"str() of {sig!r} is {text!r}")
            for form in (text, f"{name},{example}", f"  {text}  "):
                parsed = Signal.parse(form)
                _check(parsed == sig, f"Signal.parse({form!r}) gave {parsed!r}, not {sig!r}")
                _check(str(parsed) == text, f"Signal.parse({form!r}) prints as {str(parsed)!r}")

    def test_rejects_junk(self) -> None:
        _expect_invalid(self.TYPE, _ALWAYS_INVALID)

    def test_rejects_wrong_length_and_non_hex(self) -> None:
        n = self._hex_digits()
        if n is None:
            return  # not a fixed-length hex type (see HEX_DIGITS)
        example = next((e for e in self.TYPE.examples if len(e) == n), "0" * n)
        bad = [
            "0" * (n - 1),
            "0" * (n + 1),
            example[:-1],
            example + example[-1],
            example * 2,
            "g" * n,
            example[:-1] + "x",
            example[: n // 2] + " " + example[n // 2 + 1 :],
            "0x" + example[2:],
            "+" + example[1:],
            "-" + example[1:],
            example[:-2] + "_" + example[-1],
            "\u0660" * n,  # ARABIC-INDIC DIGIT ZERO: a digit to int(), not hex
        ]
        _expect_invalid(self.TYPE, bad)

    def test_rejects_the_declared_invalid_values(self) -> None:
        _expect_invalid(self.TYPE, self.INVALID)

    def test_parse_rejects_bad_values(self) -> None:
        self._registry()
        name = self.TYPE.name
        for value in ("", "   ", "None"):
            for form in (f"{name}:{value}", f"{name},{value}"):
                try:
                    parsed = Signal.parse(form)
                except InvalidSignal:
                    continue
                raise AssertionError(f"Signal.parse({form!r}) accepted junk: {parsed!r}")

    # -- distance and thresholds ---------------------------------------------------------------

    def test_self_distance_is_zero(self) -> None:
        for e in self.TYPE.examples:
            d = self.TYPE.distance(e, e)
            _check(d == 0, f"{self.TYPE.name}.distance({e!r}, itself) = {d!r}")

    def test_distance_is_symmetric(self) -> None:
        for a, b in itertools.combinations(self.TYPE.examples, 2):
            ab, ba = self.TYPE.distance(a, b), self.TYPE.distance(b, a)
            _check(ab == ba, f"{self.TYPE.name}.distance not symmetric on {a!r}, {b!r}: {ab} {ba}")

    def test_different_examples_are_apart(self) -> None:
        for a, b in itertools.combinations(self.TYPE.examples, 2):
            if a == b:
                continue
            d = self.TYPE.distance(a, b)
            _check(
                isinstance(d, int) and d > 0,
                f"{self.TYPE.name}.distance({a!r}, {b!r}) = {d!r}, expected a positive int",
            )

    def test_index_codes_have_code_size_bytes(self) -> None:
        codes = {}
        for e in self.TYPE.examples:
            code = self.TYPE.to_code(e)
            _check(
                isinstance(code, bytes) and len(code) == self.TYPE.code_size,
                f"{self.TYPE.name}.to_code({e!r}) gave {code!r}, not {self.TYPE.code_size} bytes",
            )
            codes[code] = e
        _check(
            len(codes) == len(set(self.TYPE.examples)),
            f"{self.TYPE.name}.to_code maps different examples to one code",
        )

    def test_hamming_distance_is_the_popcount_of_the_codes(self) -> None:
        """A Hamming index compares codes, not strings: both must give the same distance."""
        if self.TYPE.distance_kind != "hamming":
            return
        for a, b in itertools.product(self.TYPE.examples, repeat=2):
            x = int.from_bytes(self.TYPE.to_code(a), "big") ^ int.from_bytes(
                self.TYPE.to_code(b), "big"
            )
            d = self.TYPE.distance(a, b)
            _check(
                d == x.bit_count(),
                f"{self.TYPE.name}.distance({a!r}, {b!r}) = {d}, but the codes differ in "
                f"{x.bit_count()} bits",
            )
            _check(
                d <= 8 * self.TYPE.code_size,
                f"{self.TYPE.name}: distance {d} is more than the code has bits",
            )

    def test_thresholds_are_ordered(self) -> None:
        lo, hi = self.TYPE.default_threshold, self.TYPE.max_threshold
        _check(
            isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi,
            f"{self.TYPE.name}: need 0 <= default_threshold <= max_threshold, got {lo}, {hi}",
        )


class _FileHasherChecks:
    """Attached to contracts whose TYPE is a FileHasher."""

    TYPE: t.ClassVar[type[FileHasher]]

    def test_hash_bytes_gives_a_valid_signal(self) -> None:
        sig = self.TYPE.hash_bytes(b"vigil conformance kit")
        _check(sig.type == self.TYPE.name, f"hash_bytes gave a {sig.type!r} signal")
        _check(self.TYPE.validate(sig.value) == sig.value, f"hash_bytes value {sig.value!r}")
        again = self.TYPE.hash_bytes(b"vigil conformance kit")
        _check(again == sig, f"{self.TYPE.name}.hash_bytes is not deterministic")

    def test_hash_file_equals_hash_bytes(self) -> None:
        data = hashlib.sha256(b"seed").digest() * 5000  # 160 KB, no need for randomness
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "content.bin"
            path.write_bytes(data)
            from_file = self.TYPE.hash_file(path)
        from_bytes = self.TYPE.hash_bytes(data)
        _check(from_file == from_bytes, f"hash_file {from_file} != hash_bytes {from_bytes}")

    def test_unrelated_content_is_far(self) -> None:
        rng = np.random.default_rng(7)
        a = self.TYPE.hash_bytes(rng.bytes(65536)).value
        b = self.TYPE.hash_bytes(rng.bytes(65536)).value
        d = self.TYPE.distance(a, b)
        _check(
            d > self.TYPE.default_threshold,
            f"two random blobs are {d} apart, within default_threshold "
            f"{self.TYPE.default_threshold}",
        )


def _hash_image(stype: type[ImageHasher], data: bytes) -> Signal:
    """The canonical (first) signal of ``data``, after checking every signal returned."""
    sigs = stype.hash_image(decode_image(data))
    _check(sigs, f"{stype.name}.hash_image returned no signal")
    for s in sigs:
        _check(s.type == stype.name, f"{stype.name}.hash_image gave a {s.type!r} signal")
        _check(
            stype.validate(s.value) == s.value,
            f"{stype.name}.hash_image gave {s.value!r}, which does not validate to itself",
        )
    return sigs[0]


class _ImageHasherChecks:
    """Attached to contracts whose TYPE is an ImageHasher."""

    TYPE: t.ClassVar[type[ImageHasher]]
    IMAGE_SEED: t.ClassVar[int]

    def test_hash_image_gives_a_valid_deterministic_signal(self) -> None:
        data = encode_image(synthetic_image(self.IMAGE_SEED))
        first, second = _hash_image(self.TYPE, data), _hash_image(self.TYPE, data)
        _check(first == second, f"{self.TYPE.name} hashed one image as {first} then {second}")

    def test_unrelated_image_is_far(self) -> None:
        base = _hash_image(self.TYPE, encode_image(synthetic_image(self.IMAGE_SEED))).value
        for other in (self.IMAGE_SEED + 1, self.IMAGE_SEED + 2):
            other_value = _hash_image(self.TYPE, encode_image(synthetic_image(other))).value
            d = self.TYPE.distance(base, other_value)
            _check(
                d > self.TYPE.default_threshold,
                f"{self.TYPE.name}: unrelated pictures (seeds {self.IMAGE_SEED}, {other}) are {d} "
                f"apart, within default_threshold {self.TYPE.default_threshold}",
            )


class _PerceptualImageChecks:
    """Attached to contracts whose TYPE is an ImageHasher with a Hamming distance: a value that
    is itself the perceptual fingerprint. (Types such as ``orb``, whose value only names
    features that are verified elsewhere, compare values exactly and skip these.)"""

    TYPE: t.ClassVar[type[ImageHasher]]
    IMAGE_SEED: t.ClassVar[int]

    def test_light_edits_stay_within_default_threshold(self) -> None:
        img = synthetic_image(self.IMAGE_SEED)
        base = _hash_image(self.TYPE, encode_image(img)).value
        edits = {
            "JPEG quality 50": encode_image(img, "JPEG", quality=50),
            "Gaussian blur radius 1": encode_image(img.filter(ImageFilter.GaussianBlur(1))),
            "downscale to 75%": encode_image(
                img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.Resampling.LANCZOS)
            ),
        }
        far = {
            what: d
            for what, data in edits.items()
            if (d := self.TYPE.distance(base, _hash_image(self.TYPE, data).value))
            > self.TYPE.default_threshold
        }
        _check(
            not far,
            f"{self.TYPE.name}: light edits beyond default_threshold "
            f"{self.TYPE.default_threshold}: {far}",
        )
