# make -j2 with more jobs than slots: make's jobserver waits for a slot in
# pselect with SIGCHLD blocked except in pselect's own mask (tests/integration
# meson.build, make_jobs). Each job writes its name to a file; the output is
# the files in order, whatever order the jobs ran in.
JOBS := a b c d e f
all: $(JOBS)
	@cat $(JOBS)
$(JOBS):
	@sleep 0.05; echo $@ > $@
