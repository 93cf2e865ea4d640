"""The one way Clearline functions log: Powertools' structured JSON, with card numbers
redacted from every line.

Requests carrying a card number are refused before they are handled, but a log line is
written down for months: whatever reaches the logger (a path, a query, an error's
parameter, an exception's text) is redacted as it is formatted, so a missed refusal
still cannot put a card number in the logs.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

from clearline.cards import contains_card_number, redact_value


class RedactingFormatter(LambdaPowertoolsFormatter):
    def serialize(self, log: Any) -> str:
        line = super().serialize(log)
        if not contains_card_number(line):
            return line  # the common case costs one scan of the line
        # Redact the structure rather than the text, so a number stays valid JSON.
        return self.json_serializer(redact_value(json.loads(line)))


def new_logger(**kwargs: Any) -> Logger:
    """A function's logger; the library's own loggers (`clearline.*`) write through it too."""
    logger = Logger(logger_formatter=RedactingFormatter(), **kwargs)
    logging.getLogger("clearline")  # registered, so that its configuration can be set
    copy_config_to_registered_loggers(source_logger=logger, include={"clearline"})
    return logger
