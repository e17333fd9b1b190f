"""Every error class survives the trip over the bus: ``to_status`` then ``from_status`` gives
back the same class, message, details and (for Temporary) delay."""

from __future__ import annotations

import pytest

from kyb import errors

CLASSES = [errors.NotFound, errors.AlreadyExists, errors.Conflict, errors.Invalid, errors.BadRequest,
           errors.TooLarge, errors.Forbidden, errors.Temporary, errors.Unauthenticated, errors.Permanent]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_round_trip_keeps_class_message_and_details(cls) -> None:
    details = [errors.FieldError("spec.replicas", "must be >= 0"), errors.FieldError("metadata.name", "Required value")]
    original = cls("it went wrong", details=details)
    back = errors.from_status(original.to_status())
    assert type(back) is cls
    assert back.message == "it went wrong"
    assert back.details == details
    assert back.code == original.code and back.reason == original.reason


def test_temporary_keeps_its_delay_and_details_apart() -> None:
    original = errors.Temporary("busy", 7.5, [errors.FieldError("x", "y")])
    back = errors.from_status(original.to_status())
    assert isinstance(back, errors.Temporary)
    assert back.delay == 7.5  # not the details list
    assert back.details == [errors.FieldError("x", "y")]


def test_unknown_reason_is_a_plain_kyb_error() -> None:
    back = errors.from_status({"reason": "Teapot", "message": "short and stout", "details": []})
    assert type(back) is errors.KybError and back.message == "short and stout"
