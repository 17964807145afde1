"""pi-agent: a push-to-talk Gemini Live voice agent for the Raspberry Pi."""

__version__ = "0.1.0"
