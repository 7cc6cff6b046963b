"""Instruct models. Formats first (`templates`: the chat templates and how a model's format is picked;
`mistral`: Mistral-NeMo through mistral-common; `tools`: tool calls parsed out of replies; `dataset`:
conversations as training tokens with assistant-only loss masks), which `minitron.data` builds on; then
generation through `model.generate` (`generate`) and the `minitron chat` / `minitron generate` commands
(`cli`).
"""
