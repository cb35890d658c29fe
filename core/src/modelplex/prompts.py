"""Prompt templates: named, reusable prompts registered through ``register_prompt_templates``."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ChainOfThoughtPrompt", "PromptTemplate"]


class PromptTemplate(BaseModel):
    """Base class of prompt templates: validated fields in, prompt text out."""

    model_config = ConfigDict(extra="forbid")

    name: ClassVar[str]

    def render(self) -> str:
        """The prompt text to send."""
        raise NotImplementedError

    def parse(self, text: str) -> Any:
        """Read the model's answer; by default the text itself."""
        return text


class ChainOfThoughtPrompt(PromptTemplate):
    """Ask for step-by-step reasoning, then a final answer after ``SOLUTION:``."""

    name: ClassVar[str] = "chain_of_thought"

    task: str = Field(min_length=1)
    steps: list[str] = Field(default_factory=list)

    def render(self) -> str:
        """The task, the numbered steps and the answer format."""
        lines = [f"Task: {self.task}", "", "Think it through step by step."]
        for number, step in enumerate(self.steps, 1):
            lines.append(f"{number}. {step}")
        lines += ["", "Write your reasoning first, then a line starting with 'SOLUTION:' "
                  "followed by the final answer."]
        return "\n".join(lines)

    def parse(self, text: str) -> dict[str, str]:
        """Split the answer into ``reasoning`` and ``solution``."""
        head, sep, tail = text.rpartition("SOLUTION:")
        if not sep:
            return {"reasoning": text.strip(), "solution": ""}
        return {"reasoning": head.strip(), "solution": tail.strip()}
