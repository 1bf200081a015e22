"""Intent classification: labelled data, the TF-IDF model and its evaluation."""

from mvm_chat.intents.dataset import (
    OUT_OF_SCOPE,
    LabelledText,
    read_labelled_csv,
    read_training_csv,
)

__all__ = ["OUT_OF_SCOPE", "LabelledText", "read_labelled_csv", "read_training_csv"]
