from core.schemas import write_all

for p in write_all():
    print(f"wrote {p}")
