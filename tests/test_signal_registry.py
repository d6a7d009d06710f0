"""The signal-type registry, the canonical ``type:value`` form, and the conformance kit itself."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import typing as t
import zlib
from pathlib import Path

import pytest

import vigil.signals
from vigil.errors import InvalidSignal, UnknownSignalType, UsageError
from vigil.signals import (
    BUILTIN_SIGNAL_TYPES,
    ENTRY_POINT_GROUP,
    FileHasher,
    ImageHasher,
    Signal,
    SignalRegistry,
    SignalType,
    registry,
)
from vigil.signals.hashes import Md5Signal, Sha256Signal
from vigil.signals.pdq import PdqSignal
from vigil.testing import SignalTypeContract

PDQ = PdqSignal.examples[0]
MD5 = Md5Signal.examples[1]


class CrcSignal(FileHasher):
    """A well-formed plug-in type used to exercise registration."""

    name = "crc32"
    content_kinds = ("file",)
    distance_kind = "exact"
    examples = ("414fa339", "00000000")

    @classmethod
    def validate(cls, value: str) -> str:
        v = value.strip().lower()
        if len(v) != 8 or any(c not in "0123456789abcdef" for c in v):
            raise InvalidSignal(f"crc32 value must be 8 hex digits, got {value!r}")
        return v

    @classmethod
    def hash_bytes(cls, data: bytes) -> Signal:
        return Signal(cls.name, f"{zlib.crc32(data):08x}")

    @classmethod
    def hash_file(cls, path: Path) -> Signal:
        return cls.hash_bytes(path.read_bytes())


def test_a_well_formed_plugin_passes_the_kit() -> None:
    """CrcSignal is the yardstick the failure tests below bend; it must pass as it is."""
    kit = _kit_for(CrcSignal)
    reg = SignalRegistry(BUILTIN_SIGNAL_TYPES)
    reg.register(CrcSignal)
    for name in dir(kit):
        if name.startswith("test_") and name not in (
            "test_registered_under_its_name",  # needs the global registry
            "test_canonical_form_round_trips",
            "test_parse_rejects_bad_values",
        ):
            getattr(kit, name)()


# -- the table ----------------------------------------------------------------------------------


KNOWN = ", ".join(sorted(st.name for st in BUILTIN_SIGNAL_TYPES))


def test_builtins_are_registered_under_literal_names() -> None:
    assert {"md5", "sha256", "pdq"} <= set(registry.names())
    assert registry.names() == sorted(st.name for st in BUILTIN_SIGNAL_TYPES)
    for st in BUILTIN_SIGNAL_TYPES:
        assert registry.get(st.name) is st
        assert st.name in registry
    assert list(registry) == list(BUILTIN_SIGNAL_TYPES)
    assert registry.file_hashers()[:2] == [Md5Signal, Sha256Signal]
    assert PdqSignal in registry.image_hashers()
    assert set(registry.file_hashers()) | set(registry.image_hashers()) == set(registry)


def test_duplicate_name_is_rejected() -> None:
    reg = SignalRegistry([Md5Signal])

    class OtherMd5(CrcSignal):
        name = "md5"

    with pytest.raises(UsageError, match=r"'md5' is taken by Md5Signal"):
        reg.register(OtherMd5)
    assert reg.get("md5") is Md5Signal  # the table is unchanged


def test_registering_the_same_class_twice_is_harmless() -> None:
    reg = SignalRegistry([Md5Signal, Md5Signal])
    reg.register(Md5Signal)
    assert reg.names() == ["md5"]


@pytest.mark.parametrize(
    "bad", ["", "PDQ", "Pdq", "my_type", "1abc", "-x", "a b", "abc\n", "a" * 33, 7]
)
def test_name_must_be_a_literal_lower_case_string(bad: object) -> None:
    cls = type("OddSignal", (CrcSignal,), {"name": bad})
    with pytest.raises(
        UsageError, match=re.escape(f"needs a literal lower-case name, got {bad!r}")
    ):
        SignalRegistry().register(cls)


def test_class_without_a_name_is_rejected() -> None:
    class Nameless(FileHasher):
        content_kinds = ("file",)
        distance_kind = "exact"

        @classmethod
        def validate(cls, value: str) -> str:
            return value

    with pytest.raises(UsageError, match=r"needs a literal lower-case name, got None"):
        SignalRegistry().register(Nameless)


def test_type_must_say_what_it_hashes() -> None:
    class Floating(SignalType):
        name = "floating"
        content_kinds = ("file",)
        distance_kind = "exact"

        @classmethod
        def validate(cls, value: str) -> str:
            return value

    with pytest.raises(UsageError, match="'floating' must derive from FileHasher or ImageHasher"):
        SignalRegistry().register(Floating)


def test_type_must_implement_validate() -> None:
    class Lazy(ImageHasher):
        name = "lazy"
        content_kinds = ("image",)
        distance_kind = "hamming"

    with pytest.raises(UsageError, match=r"'lazy' does not implement validate\(\)"):
        SignalRegistry().register(Lazy)


def test_image_hasher_must_implement_hash_image() -> None:
    class Blind(ImageHasher):
        name = "blind"
        content_kinds = ("image",)
        distance_kind = "hamming"
        validate = CrcSignal.validate

    with pytest.raises(UsageError, match=r"'blind' does not implement hash_image\(\)"):
        SignalRegistry().register(Blind)


@pytest.mark.parametrize("missing", ["hash_bytes", "hash_file"])
def test_file_hasher_must_implement_both_hash_methods(missing: str) -> None:
    ns: dict[str, t.Any] = {"name": "half", "content_kinds": ("file",), "distance_kind": "exact"}
    ns["validate"] = CrcSignal.validate
    for method in ("hash_bytes", "hash_file"):
        if method != missing:
            ns[method] = vars(CrcSignal)[method]
    half = type("Half", (FileHasher,), ns)
    with pytest.raises(UsageError, match=rf"'half' does not implement {missing}\(\)"):
        SignalRegistry().register(half)


@pytest.mark.parametrize("thing", ["md5", 42, CrcSignal()])
def test_non_classes_are_rejected(thing: object) -> None:
    with pytest.raises(UsageError, match="must be a class"):
        SignalRegistry().register(thing)  # type: ignore[arg-type]


def test_unrelated_classes_are_rejected() -> None:
    with pytest.raises(UsageError, match="needs a literal lower-case name, got None"):
        SignalRegistry().register(object)  # type: ignore[arg-type]


def test_unknown_type_lists_the_known_ones() -> None:
    with pytest.raises(UnknownSignalType) as exc:
        registry.get("tlsh")
    assert str(exc.value) == f"unknown signal type 'tlsh' (known: {KNOWN})"
    assert "md5, " in KNOWN
    assert exc.value.details == {"signal_type": "tlsh"}
    assert exc.value.code == "unknown_signal_type"
    assert isinstance(exc.value, InvalidSignal)  # callers catching bad signals catch this too
    assert "tlsh" not in registry


# -- plug-ins through the entry-point group -----------------------------------------------------


@dataclasses.dataclass
class FakeEntryPoint:
    target: t.Any

    def load(self) -> t.Any:
        return self.target


def _fake_entry_points(monkeypatch: pytest.MonkeyPatch, targets: list[t.Any]) -> list[str]:
    groups: list[str] = []

    def entry_points(*, group: str) -> list[FakeEntryPoint]:
        groups.append(group)
        return [FakeEntryPoint(x) for x in targets]

    monkeypatch.setattr(vigil.signals, "entry_points", entry_points)
    return groups


def test_plugins_register_through_the_entry_point_group(monkeypatch: pytest.MonkeyPatch) -> None:
    groups = _fake_entry_points(monkeypatch, [CrcSignal])
    reg = SignalRegistry(BUILTIN_SIGNAL_TYPES)
    reg.load_plugins()
    reg.load_plugins()  # loading twice is harmless
    assert groups == [ENTRY_POINT_GROUP, ENTRY_POINT_GROUP] == ["vigil.signal_types"] * 2
    assert reg.get("crc32") is CrcSignal
    assert reg.file_hashers()[-1] is CrcSignal
    assert reg.names() == sorted([*KNOWN.split(", "), "crc32"])


def test_a_plugin_cannot_take_a_builtin_name(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakePdq(CrcSignal):
        name = "pdq"

    _fake_entry_points(monkeypatch, [FakePdq])
    reg = SignalRegistry(BUILTIN_SIGNAL_TYPES)
    with pytest.raises(UsageError, match="'pdq' is taken by PdqSignal"):
        reg.load_plugins()
    assert reg.get("pdq") is PdqSignal


# -- the canonical form -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"pdq:{PDQ}", Signal("pdq", PDQ)),
        (f"pdq,{PDQ}", Signal("pdq", PDQ)),
        (f"  PDQ : {PDQ.upper()}  \n", Signal("pdq", PDQ)),
        (f"md5:{MD5}", Signal("md5", MD5)),
        (f"Md5,{MD5.upper()}", Signal("md5", MD5)),
        (f"sha256:{Sha256Signal.examples[0]}", Signal("sha256", Sha256Signal.examples[0])),
    ],
)
def test_parse(text: str, expected: Signal) -> None:
    sig = Signal.parse(text)
    assert sig == expected
    assert Signal.parse(str(sig)) == sig
    assert str(Signal.parse(str(sig))) == str(sig)


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("", InvalidSignal, "expected 'type:value'"),
        ("   ", InvalidSignal, "expected 'type:value'"),
        ("pdq", InvalidSignal, "expected 'type:value'"),
        (PDQ, InvalidSignal, "expected 'type:value'"),
        ("pdq:", InvalidSignal, "expected 'type:value'"),
        ("pdq,", InvalidSignal, "expected 'type:value'"),
        (f":{PDQ}", UnknownSignalType, "unknown signal type ''"),
        (f"tlsh:{PDQ}", UnknownSignalType, "unknown signal type 'tlsh'"),
        (f"pdq-local:{PDQ}", UnknownSignalType, f"known: {KNOWN}"),
        ("pdq:1234", InvalidSignal, "64 hex digits, got 4 characters"),
        (f"pdq:{PDQ}:extra", InvalidSignal, "64 hex digits"),
        (f"pdq:{PDQ[:-1]}g", InvalidSignal, "must be hexadecimal"),
        (f"md5:{PDQ}", InvalidSignal, "md5 value must be 32 hex digits"),
        ("md5:None", InvalidSignal, "md5 value must be 32 hex digits"),
        ("null,null", UnknownSignalType, "unknown signal type 'null'"),
    ],
)
def test_parse_rejects_garbage(text: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        Signal.parse(text)


def test_signal_equality_ignores_quality_and_variant() -> None:
    a = Signal("pdq", PDQ, quality=100, variant="trimmed")
    b = Signal("pdq", PDQ)
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != Signal("pdq", PdqSignal.examples[1])
    assert Signal("md5", MD5) != Signal("sha256", MD5)
    assert str(a) == f"pdq:{PDQ}"
    assert a.to_dict() == {"type": "pdq", "value": PDQ, "quality": 100, "variant": "trimmed"}
    assert b.to_dict() == {"type": "pdq", "value": PDQ}
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.value = "0" * 64  # type: ignore[misc]


def test_signal_method_validates() -> None:
    assert PdqSignal.signal(PDQ.upper()) == Signal("pdq", PDQ)
    with pytest.raises(InvalidSignal):
        PdqSignal.signal("nope")


# -- the conformance kit catches broken types ---------------------------------------------------


class SloppyHex(FileHasher):
    """Validates with int(v, 16), which accepts '0x', signs, '_' and non-ASCII digits."""

    name = "sloppy"
    content_kinds = ("file",)
    distance_kind = "exact"
    examples = ("0123456789abcdef", "fedcba9876543210")

    @classmethod
    def validate(cls, value: str) -> str:
        v = value.strip().lower()
        if len(v) != 16:
            raise InvalidSignal("16 digits")
        try:
            int(v, 16)
        except ValueError:
            raise InvalidSignal("hex") from None
        return v


def _kit_for(stype: type[SignalType], **attrs: t.Any) -> t.Any:
    # not named Test*, so pytest never collects it; we call its tests by hand
    cls = type("KitUnderTest", (SignalTypeContract,), {"TYPE": stype, **attrs})
    return cls()


def test_kit_catches_sloppy_hex_validation() -> None:
    kit = _kit_for(SloppyHex)
    kit.test_rejects_junk()  # the generic junk is caught by the length check
    with pytest.raises(AssertionError, match=r"accepted '0x23456789abcdef'"):
        kit.test_rejects_wrong_length_and_non_hex()


def test_kit_catches_unregistered_and_asymmetric_types() -> None:
    class Lopsided(CrcSignal):
        name = "lopsided"

        @classmethod
        def distance(cls, a: str, b: str) -> int:
            return 1 if a < b else 0

    kit = _kit_for(Lopsided)
    with pytest.raises(AssertionError, match="'lopsided' is not in vigil.signals.registry"):
        kit.test_registered_under_its_name()
    with pytest.raises(AssertionError, match="not symmetric"):
        kit.test_distance_is_symmetric()
    with pytest.raises(AssertionError, match="expected a positive int"):
        kit.test_different_examples_are_apart()


def test_kit_catches_non_normalised_examples_and_bad_thresholds() -> None:
    class Shouty(CrcSignal):
        name = "shouty"
        examples = ("414FA339", "00000000")
        default_threshold = 3
        max_threshold = 2

    kit = _kit_for(Shouty)
    with pytest.raises(AssertionError, match=r"validate\('414FA339'\) gave '414fa339'"):
        kit.test_examples_validate_to_themselves()
    with pytest.raises(AssertionError, match="default_threshold <= max_threshold"):
        kit.test_thresholds_are_ordered()


def test_kit_attaches_tests_by_capability() -> None:
    file_kit, image_kit = _kit_for(CrcSignal), _kit_for(PdqSignal)
    assert hasattr(file_kit, "test_hash_file_equals_hash_bytes")
    assert not hasattr(file_kit, "test_light_edits_stay_within_default_threshold")
    assert hasattr(image_kit, "test_light_edits_stay_within_default_threshold")
    assert not hasattr(image_kit, "test_hash_file_equals_hash_bytes")


def test_kit_needs_a_type() -> None:
    with pytest.raises(TypeError, match="must set TYPE to a SignalType subclass"):
        type("TestNoType", (SignalTypeContract,), {})
    with pytest.raises(TypeError, match="must set TYPE"):
        type("TestWrongType", (SignalTypeContract,), {"TYPE": str})
    type("SharedBase", (SignalTypeContract,), {"INVALID": ["x"]})  # an abstract base is fine


def test_kit_catches_a_computed_name() -> None:
    class Meta(type):
        @property
        def name(cls) -> str:
            return "computed"

    class Computed(FileHasher, metaclass=Meta):
        content_kinds = ("file",)
        distance_kind = "exact"
        examples = CrcSignal.examples
        validate = CrcSignal.validate

    assert Computed.name == "computed"
    kit = _kit_for(Computed)
    with pytest.raises(AssertionError, match="must be a literal str class attribute"):
        kit.test_name_is_a_literal_lower_case_string()


def test_vigil_and_the_kit_import_without_pytest() -> None:
    code = (
        "import sys; sys.modules['pytest'] = None\n"  # any 'import pytest' now fails
        "import vigil, vigil.signals, vigil.media.image, vigil.testing\n"
        "print(vigil.testing.SignalTypeContract.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "SignalTypeContract"
