#include <stdio.h>

/* benches/real_projects.sh rewrites the next line for its "one-line change" rebuilds. */
static const char *edit = "edit-0";

int main(void) {
    printf("hello from static C, %s\n", edit);
    return 0;
}
