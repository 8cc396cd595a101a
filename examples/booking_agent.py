"""Booking assistant: a tool that acts, so a person approves each call first.

    myagent-ws server examples/booking_agent.py --port 8080

Ask "Book a table for 2 at Luigi at 19:30". The turn sends agent.tool_call, then
agent.user_confirm, and waits: the console shows an approve/reject dialog; other clients
answer with user.response {"approved": true|false, "feedback": "..."}. Approved, the
booking is made (once, whatever else arrives); rejected, it is not, and the agent says so.
With no LLM configured the built-in offline model picks the tool and fills in the
restaurant, the party size and the time slot from your words.
"""

from myagent import BaseTool, ToolResult, create_react_agent

SLOTS = [f"{hour}:{minute}" for hour in range(17, 23) for minute in ("00", "30")]


class BookTableTool(BaseTool):
    """Books a table. Each session's copy keeps that session's bookings: the record that
    shows every approved call ran exactly once."""

    name = "book_table"
    description = "Book a restaurant table for tonight: the restaurant, how many people, when."
    parameters = {
        "type": "object",
        "properties": {
            "restaurant": {"type": "string", "description": "The restaurant's name."},
            "people": {
                "type": "integer",
                "minimum": 1,
                "maximum": 20,
                "description": "How many people.",
            },
            "time": {"type": "string", "enum": SLOTS, "default": "19:00", "description": "When."},
        },
        "required": ["restaurant", "people", "time"],
    }
    # Nothing is booked until a person approves this very call.
    requires_confirmation = True

    def __init__(self) -> None:
        self.bookings: list[dict[str, object]] = []

    async def execute(self, restaurant: str, people: int, time: str) -> ToolResult:
        number = len(self.bookings) + 1
        self.bookings.append(
            {"number": number, "restaurant": restaurant, "people": people, "time": time}
        )
        return ToolResult(
            output=f"Booked a table at {restaurant} for {people} at {time} "
            f"(booking #{number} in this conversation)."
        )


# The server clones this agent for every session: each gets its own tool and bookings.
agent = create_react_agent(
    name="booking-assistant",
    description="Books restaurant tables, after you approve each booking.",
    tools=[BookTableTool()],
    system_prompt=(
        "You book restaurant tables with book_table. The user approves every booking; "
        "if they decline, say it was not booked and ask what to change."
    ),
    max_steps=4,
)
