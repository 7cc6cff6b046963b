"""Instruct models: chat and tool-call formats, generation, and chat data with assistant-only loss masks."""
from minitron.chat.generate import Completion, Sampling, complete, complete_many, generate_reply
from minitron.chat.templates import ChatFormat, attach_template, detect_format, encode, get_format, render
from minitron.chat.tools import ToolCall, ToolCallError, parse_tool_calls

__all__ = ["ChatFormat", "Completion", "Sampling", "ToolCall", "ToolCallError", "attach_template", "complete",
           "complete_many", "detect_format", "encode", "generate_reply", "get_format", "parse_tool_calls", "render"]
