# Conveniences over scripts/ (which need only bash on a fresh Debian machine).
.PHONY: build demo test bench
build: ; bash scripts/build.sh
demo: ; bash scripts/demo.sh
test: ; bash scripts/test.sh
bench: ; bash bench/ppl_table.sh
