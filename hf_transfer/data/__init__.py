from .digits import TARGET_DOMAINS, DigitsTransferTask, make_digits_task

__all__ = ["TARGET_DOMAINS", "DigitsTransferTask", "make_digits_task"]
