"""``python -m mvm_chat`` is the ``mvm-chat`` command."""

from mvm_chat.cli import main

main()
